"""The embedded local cluster behind `a3c run`."""
