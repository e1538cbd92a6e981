"""High attention scores and where to find them: how well cheap searches (FAVOR+ random features, k-means
buckets over keys) find each query's top-k keys in a trained checkpoint, against exact top-k.

`search` holds the searches and measures, `study` runs them on checkpoints (and restricts our model's
attention to what they find), `report` writes the tables and plots. The command is
`experiments/approximate_attention/run.py`.
"""
