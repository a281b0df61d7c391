"""What a config can name to train: the networks (networks) and the optimizers and learning-rate schedules (optim),
each a registry of plain builders."""
