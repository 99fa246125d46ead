"""The Time-LLM core: the only package that imports torch and transformers.

Importing this package imports no torch; the modules that need it do:

- ``config``: ``CoreConfig``, the ``core`` config section (no torch).
- ``prompt``: window statistics -> prompt text -> cached token ids (numpy + tokenizer).
- ``backbone``: resolve ``minilm`` / ``smollm2`` / any HF id or path; load, truncate, freeze.
- ``layers``: RevIN, patch embedding, reprogramming, flatten head, ``TimeLLMNet``.
- ``member``: ``TimeLLM``, the ``timellm`` pipeline member (fit, predict, save, load).
"""
