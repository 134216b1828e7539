"""The soak test (`make soak`): see __main__.py and README "Soak test"."""
