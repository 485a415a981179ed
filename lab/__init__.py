"""The lab: model, data, training loop, counting, configs and the command lines."""
