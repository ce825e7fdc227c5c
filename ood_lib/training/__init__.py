"""Training: the one loop every model uses, data-parallel replicas and the profiles' budgets."""
