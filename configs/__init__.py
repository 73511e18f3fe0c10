"""Hydra config groups shipped with alignflow (YAML only): policy/, reward/,
algorithm/, experiment/ for ``alignflow train``; pretrain_experiment/ for
``alignflow pretrain``; accelerate/ launch files."""
