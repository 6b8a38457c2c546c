"""The run config: the schema (`RunConfig`, sd-scripts' option names), its TOML file,
cross-option rules, the one `key=value` parser, and option-name lookup. Never imports torch.
"""
