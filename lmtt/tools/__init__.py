"""Command-line tools: the CLI, the benchmark, the load test, the test server and the results writer."""
