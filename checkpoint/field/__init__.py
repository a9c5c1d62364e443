"""What a person runs on a box in the field: the installer, the marshal's preflight
(`doctor`) and the u-blox receiver set-up. These read the box (its config, its
store); the box never imports them.
"""
