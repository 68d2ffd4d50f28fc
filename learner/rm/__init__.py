"""Reward model: base model + LoRA + scalar head trained with the Bradley-Terry ranking loss.

What the losses see: every ``Comparison`` is one pair with a target P(chosen better): 1 for a
vote, 0.5 for a tie. A K-way ranking arrives from the store already expanded into its C(K, 2)
pairs (InstructGPT, Ouyang et al. 2022, https://arxiv.org/abs/2203.02155, eq. 1), each weighted
by the store. Thumbs up/down, and both answers of a "both bad" vote (no order, but both below
acceptable), arrive as ``Rating`` rows for the pointwise rating loss. See ``learner.rm.loss``.
"""
