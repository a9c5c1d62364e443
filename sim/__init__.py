"""Simulator and test helpers: a real Mosquitto broker, simulated boxes and pins."""
