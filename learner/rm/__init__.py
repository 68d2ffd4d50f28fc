"""Reward model: base model + LoRA + scalar head trained with the Bradley-Terry ranking loss.

What the loss sees: every ``Comparison`` is one ordered pair (chosen > rejected). A K-way ranking
arrives from the store already expanded into its C(K, 2) pairs (InstructGPT, Ouyang et al. 2022,
https://arxiv.org/abs/2203.02155, eq. 1), each weighted by the store. Ties and "both bad" votes
are *not* in the ranking loss: a tie carries no ordering, and "both bad" carries no relative
information between the two answers, so neither can push ``r_chosen - r_rejected`` anywhere
meaningful. The store keeps them for SFT selection and rating statistics.
"""
