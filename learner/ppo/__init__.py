"""LoRA PPO of the policy against the reward model, with a per-token KL penalty to the reference.

References: Schulman et al. 2017 (PPO, https://arxiv.org/abs/1707.06347); Ziegler et al. 2019
(RL fine-tuning of LMs from human preferences, https://arxiv.org/abs/1909.08593); Ouyang et al.
2022 (InstructGPT); Huang et al. 2024, "The N+ Implementation Details of RLHF with PPO"
(https://arxiv.org/abs/2403.17031).
"""
