"""The model and what it computes: `Config` (`config`), `GPT` (`gpt`), composable attention (`attention/`),
positions, MLPs, the variant list every model test runs over (`variants`), FLOP counts and decoding
(`generate`). Knows torch and `core` only: no data, training or measurement code."""
