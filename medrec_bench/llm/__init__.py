"""Shared LLM plumbing of the LLM-backed models (the LEADER teacher in ``leader/``, the LLM baselines in
``baselines/``): one import path per name, no re-exports here.

- :mod:`.prompts`: a sample as an English prompt, fitted to a token budget;
- :mod:`.tokens`: prompts tokenised once per fit (:class:`PromptTokens`);
- :mod:`.batches`: padded token batches and the trainable-only state module;
- :mod:`.backbones`: offline loading of the language models (SmolLM2, tiny-llama, MiniLM, local folders);
- :mod:`.lora`: LoRA adapters (peft) and the training settings of prompt-based models;
- :mod:`.calls`: causal-LM forwards across ``transformers`` versions and greedy decoding;
- :mod:`.features`: the on-disk cache of per-sample feature vectors.

Nothing in :mod:`medrec_bench` outside this package imports it, so the framework never needs ``transformers``.
"""
