"""The REST inference service: one model loaded at start-up, MLflow's scoring protocol, a typed /predict,
Prometheus metrics. Importing this package does not import MLflow: a baked model folder loads without it."""
