"""scoring layer: the River model factory, the model zoo, the verdict policy and the
decision-time records awaiting labels."""
