"""Several tasks behind one backend: each episode is one of them, chosen by its seed.

A multi-task Dojo run (one policy and one steps-to-go model over many tasks, e.g.
Meta-World's MT10, or both tabletop instruction families) needs every part that takes
"a task" (fleet, practice, evaluation, demos) to take a *set* of tasks. Rather than
teach each of them about sets, this backend is one environment that holds one
sub-environment per task and hands each episode to task ``seed % n_tasks`` (or the
task named in ``reset(options={"task": i})``). Consecutive seeds therefore cycle
through the tasks, so any evaluation over a seed range is balanced across them, and
``info["task"]`` / ``info["task_name"]`` say which task an episode was::

    make_env("multitask", {"tasks": [
        {"backend": "metaworld", "env_config": {"task": "reach-v3"}},
        {"backend": "metaworld", "env_config": {"task": "push-v3"}},
    ]})

Every task must give the same image shape, proprioception size and action size (one
policy reads them all). ``terminate_on_success`` here, when set, overrides each task's
(practice turns it off so that only the learned detector ends episodes).
"""
from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from sim_backends.base import BackendError

INFO_TASK = "task"
INFO_TASK_NAME = "task_name"


def task_name(task: dict[str, Any]) -> str:
    """A short readable name: Meta-World's task, the tabletop family, or the backend."""
    if task.get("name"):
        return str(task["name"])
    cfg = task.get("env_config") or {}
    for key in ("task", "family", "env_id"):
        if cfg.get(key):
            extra = "+".join(cfg.get("objects") or ())
            return f"{cfg[key]}[{extra}]" if extra else str(cfg[key])
    return str(task.get("backend"))


@dataclass(frozen=True)
class MultiTaskConfig:
    tasks: tuple[dict[str, Any], ...]
    """One entry per task: {"backend": name, "env_config": {...}, "name": optional}."""
    terminate_on_success: bool | None = None
    """When set, overrides every task's own terminate_on_success."""
    max_live: int | None = None
    """Sub-environments kept open at once (least recently used closed first). None: every task
    stays open while the machine has memory to spare (``memory_is_short``: below
    ``reserve_mb(total)`` available once another is built), else the least recently used is
    closed first. A Meta-World environment holds ~150 MB once it has rendered (~100 of it the
    renderer's GL context) and switching tasks costs one build (~0.3 s, about a 100-step
    episode's simulation): with 2 open and 3 tasks drawn in turn, every episode paid it."""

    def __post_init__(self) -> None:
        tasks = tuple(dict(t) for t in (self.tasks or ()))
        if not tasks:
            raise ValueError("MultiTaskConfig.tasks is empty; give at least one "
                             "{'backend': ..., 'env_config': {...}}")
        for i, t in enumerate(tasks):
            if not isinstance(t.get("backend"), str):
                raise ValueError(f"MultiTaskConfig.tasks[{i}] = {t!r} has no 'backend' name; "
                                 "each task is {'backend': ..., 'env_config': {...}}")
            if t["backend"] == "multitask":
                raise ValueError(f"MultiTaskConfig.tasks[{i}]: a multitask task cannot nest another multitask")
            if not isinstance(t.get("env_config", {}), dict):
                raise ValueError(f"MultiTaskConfig.tasks[{i}].env_config must be a dict, got {t['env_config']!r}")
        if self.max_live is not None and not (isinstance(self.max_live, int) and self.max_live >= 1):
            raise ValueError(f"MultiTaskConfig.max_live={self.max_live!r}; expected None (memory decides) "
                             f"or an int >= 1")
        object.__setattr__(self, "tasks", tasks)

    @property
    def names(self) -> list[str]:
        return [task_name(t) for t in self.tasks]


# (backend, env_config) -> (image_shape, proprio_dim, action_dim, max_steps), per process.
_SHAPES: dict[str, tuple[tuple[int, ...], int, int, int]] = {}


ENV_MB = 200  # what one more open sub-environment may take (a rendered Meta-World task: ~150 MB)


def reserve_mb(total_mb: float) -> float:
    """Memory to leave free when deciding to keep another task open: 15 % of the machine, at
    least 1 GiB (the learner, the other robots and the page cache need it)."""
    return max(1024.0, 0.15 * total_mb)


def memory_mb() -> tuple[float, float] | None:
    """(available, total) MiB from /proc/meminfo; None where there is none (not Linux)."""
    try:
        fields = dict(line.split(":", 1) for line in open("/proc/meminfo").read().splitlines() if ":" in line)
        return (float(fields["MemAvailable"].split()[0]) / 1024, float(fields["MemTotal"].split()[0]) / 1024)
    except (OSError, KeyError, ValueError):
        return None


def memory_is_short(env_mb: float = ENV_MB) -> bool:
    """Would opening one more sub-environment leave less than the reserve free? (True where
    memory cannot be read: then only two stay open, the old rule.)"""
    mem = memory_mb()
    if mem is None:
        return True
    available, total = mem
    return available - env_mb < reserve_mb(total)


def _task_key(backend: str, env_config: dict[str, Any]) -> str:
    return json.dumps([backend, env_config], sort_keys=True, default=str)


class MultiTaskEnv:
    """One environment per task, opened when an episode needs it; an episode runs on the
    task its seed picks."""

    def __init__(self, config: MultiTaskConfig, make_env: Callable[[str, dict[str, Any]], Any]) -> None:
        # ``make_env`` builds each task's environment (the registry's, passed in by it: the registry
        # knows this backend, so this module does not import the registry back).
        self.config = config
        self._make_env = make_env
        self.names = config.names
        self._configs = []
        for t in config.tasks:
            env_config = dict(t.get("env_config") or {})
            if config.terminate_on_success is not None:
                env_config["terminate_on_success"] = bool(config.terminate_on_success)
            self._configs.append((t["backend"], env_config))
        self._live: OrderedDict[int, Any] = OrderedDict()
        shapes = [self._shape_of(i) for i in range(len(self._configs))]
        first = shapes[0]
        for name, shp in zip(self.names, shapes):
            for k, attr in enumerate(("image_shape", "proprio_dim", "action_dim")):
                if shp[k] != first[k]:
                    self.close()
                    raise BackendError(
                        f"task {name!r} has {attr}={shp[k]} but task {self.names[0]!r} has {first[k]}; one "
                        f"policy reads every task, so all tasks need the same {attr} ("
                        + ("give every task the same image_size)" if attr == "image_shape" else
                           "these backends cannot share one policy: train separate runs)"))
        self.image_shape, self.proprio_dim, self.action_dim = first[0], first[1], first[2]
        self.max_steps = max(s[3] for s in shapes)
        self.current = 0
        self.episode_id = 0

    def _shape_of(self, i: int) -> tuple[tuple[int, ...], int, int, int]:
        key = _task_key(*self._configs[i])
        if key not in _SHAPES:
            env = self._env(i)
            _SHAPES[key] = (tuple(int(x) for x in env.image_shape), int(env.proprio_dim),
                            int(env.action_dim), int(env.max_steps))
        return _SHAPES[key]

    def _env(self, i: int) -> Any:
        if i in self._live:
            self._live.move_to_end(i)
            return self._live[i]
        cap = self.config.max_live or self.n_tasks
        while self._live and (len(self._live) >= cap
                              or (self.config.max_live is None and len(self._live) >= 2 and memory_is_short())):
            _, old = self._live.popitem(last=False)
            old.close()
        backend, env_config = self._configs[i]
        try:
            env = self._make_env(backend, env_config)
        except Exception as e:
            raise BackendError(f"multitask: cannot build task {self.names[i]!r} "
                               f"({backend}, {env_config}): {type(e).__name__}: {e}") from e
        self._live[i] = env
        return env

    @property
    def n_tasks(self) -> int:
        return len(self._configs)

    def task_of_seed(self, seed: int | None) -> int:
        return 0 if seed is None else int(seed) % self.n_tasks

    def select(self, task: int | str) -> Any:
        """Make ``task`` (index or name) current and return its environment."""
        if isinstance(task, str):
            if task not in self.names:
                raise BackendError(f"unknown task {task!r}; this multitask env has {self.names}")
            task = self.names.index(task)
        if not 0 <= int(task) < self.n_tasks:
            raise BackendError(f"task index {task} out of range; this multitask env has {self.n_tasks} tasks")
        self.current = int(task)
        return self._env(self.current)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, Any], dict[str, Any]]:
        options = dict(options or {})
        task = options.pop("task", None)
        env = self.select(self.task_of_seed(seed) if task is None else task)
        self.episode_id += 1
        obs, info = env.reset(seed=seed, options=options or None)
        return obs, self._tag(info)

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self._env(self.current).step(action)
        return obs, reward, terminated, truncated, self._tag(info)

    def _tag(self, info: dict[str, Any]) -> dict[str, Any]:
        return {**info, INFO_TASK: self.current, INFO_TASK_NAME: self.names[self.current]}

    def render(self) -> np.ndarray:
        return self._env(self.current).render()

    def __getattr__(self, name: str) -> Any:
        # Backend-specific helpers (privileged_state, goal_keypoints, instruction, ...) of
        # the task the current episode runs on, so scripted experts work unchanged.
        if name.startswith("_") or name in ("config", "names", "current"):
            raise AttributeError(name)
        return getattr(self._env(self.current), name)

    def close(self) -> None:
        live = self.__dict__.get("_live") or {}
        while live:
            _, env = live.popitem()
            try:
                env.close()
            except Exception:  # noqa: BLE001 - close the rest
                pass


def run_multitask_expert_episode(env: MultiTaskEnv, seed: int, rng,
                                 expert_episode: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """The chosen task's own scripted expert (``expert_episode``: the registry's)."""
    i = env.task_of_seed(seed)
    return expert_episode(env.config.tasks[i]["backend"], env.select(i), seed, rng)


def resolve_task(default_backend: str, default_config: dict[str, Any], backend: str | None,
                 env_config: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """The task to run: the given one, else a checkpoint's own. A config given without a
    backend for a multi-task checkpoint is a single task of that checkpoint's (first) backend,
    e.g. a tabletop scene with a new object for a model trained on both tabletop families."""
    if env_config is None:
        return backend or default_backend, dict(default_config)
    if backend is None and default_backend == "multitask" and "tasks" not in env_config:
        backend = (default_config.get("tasks") or [{}])[0].get("backend")
    return backend or default_backend, dict(env_config)
