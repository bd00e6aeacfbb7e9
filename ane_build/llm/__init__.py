"""LLM checkpoints as chunked ANE programs: split, plan, package for the simulator, and run.

`split_checkpoint` turns a Hugging Face LLaMA checkpoint into static-shape chunk graphs and a
manifest (`plan_split` decides the chunks from shapes alone); `compile_synthetic` packages them
with synthetic programs for the simulator; `ChunkedDecoder` runs a split folder as one causal LM,
its KV cache kept in the programs' inputs; `plan_llm` is what a build expands an ``[llm]`` table
into. Nothing here tokenizes or samples (that is ``chat``).
"""
