"""Mosquitto: the shipped configuration, password and ACL files, provisioning."""
