"""What a run writes as it trains: metrics.jsonl and TensorBoard (`metrics_log`), the console
(`progress`), pictures drawn from those files (`pictures`), and the writer that ties them together for
the training loop (`outputs`)."""
