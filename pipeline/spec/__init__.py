"""What a model is: the recipe (TOML, the built-ins), the network it resolves to, its data (reading,
checks, split, statistics), `init`'s starter recipe, the shared limits. Torch-free."""
