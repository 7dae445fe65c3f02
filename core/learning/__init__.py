"""The learner (torch): the policy and its encoders, the dataset format, checkpoints,
scripted demonstrations, Stage-1 training, rollouts on a fleet, evaluation, the reward
model's refinement and Stage-2 practice (``core.learning.practice``)."""
