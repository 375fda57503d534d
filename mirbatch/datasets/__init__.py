"""Training data: rendering from GM sample libraries and data-set layouts."""
