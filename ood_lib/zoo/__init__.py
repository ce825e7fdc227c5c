"""The model zoo: the trained models a run needs (the registry of families and checkpoints, ensemble
members, background models) and the commands that train them."""
