"""headstart classifiers: heads trained on cached features, metrics and plots, safe persistence."""
