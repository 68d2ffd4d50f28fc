"""Model-level decoding pieces serving's engine loop and the learner's rollouts share.

A transformers causal LM (PEFT-wrapped or not) decoded a batch at a time: left-padded prompts
prefilled in one forward, then one forward per token for the rows still running, with the keys
and values in preallocated buffers (``kv_slab``), grouped-query attention that does not copy
the cache (``attention``) and per-row sampling (``sampling``). ``batch.decode_batch`` runs a
fixed list of prompts to the end; serving's ``DecodeLoop`` admits and drops requests between
steps around the same pieces. Like the rest of ``common``, nothing here imports ``serving`` or
``learner``.
"""
