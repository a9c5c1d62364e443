"""The box: the daemon that wires pins, the GPS port, the card (SQLite) and MQTT
around the pure core, and everything it runs beside them: the control socket, systemd
notify and watchdog, the LED and buzzer, chrony's refclock feed; and the replay of a
capture through the same pipeline.
"""
