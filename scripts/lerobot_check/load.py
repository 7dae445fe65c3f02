"""LeRobot's own LeRobotDataset on a Dojo export (scripts/lerobot_check/run.sh runs it in its own venv)."""
import json
import sys

from lerobot.datasets.lerobot_dataset import LeRobotDataset
root = sys.argv[1]
ds = LeRobotDataset("dojo/export", root=root, video_backend="pyav")
info = json.load(open(f"{root}/meta/info.json"))
print("episodes", ds.num_episodes, "frames", ds.num_frames, "len", len(ds), "fps", ds.fps)
assert ds.num_episodes == info["total_episodes"] and ds.num_frames == info["total_frames"] == len(ds)
item = ds[0]
print(sorted(item.keys()))
cam = [k for k in ds.meta.video_keys][0]
print(cam, tuple(item[cam].shape), item[cam].dtype, float(item[cam].min()), float(item[cam].max()))
last = ds[len(ds) - 1]
print("last episode_index", int(last["episode_index"]), "frame_index", int(last["frame_index"]), "task", last["task"])
lengths = [int(ds.meta.episodes[i]["length"]) for i in range(ds.num_episodes)]
print("lengths", lengths)
print("dojo.d first frames", [float(ds[i]["dojo.d"]) for i in range(3)])
print("OK")
