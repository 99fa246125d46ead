"""The Time-LLM core: the only package that imports torch and transformers.

Importing this package imports no torch; the modules that need it do.
"""
