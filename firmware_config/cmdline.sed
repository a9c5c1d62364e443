# checkpoint: remove the serial console from the kernel command line.
#
# WHERE: /boot/firmware/cmdline.txt (Raspberry Pi OS Bookworm; one single line).
# HOW:   sudo sed -i.bak -f cmdline.sed /boot/firmware/cmdline.txt
#        (`sudo checkpoint install` makes the same change, shows the diff and asks
#        first; raspi-config → Interface Options → Serial Port → "login shell: No,
#        hardware enabled: Yes" does it too.)
# WHY:   with `console=serial0,115200` the kernel and a login getty write to the
#        UART the GPS is wired to, and read what the GPS sends as keystrokes. The
#        GPS port must belong to the daemon alone. `console=tty1` (the screen) stays.
#
# Drops every console= on the Pi's UARTs, whatever the baud rate, with the space that
# separated it; leaves the rest of the line as it was. Each rule loops until nothing
# is left to drop (a line may name several serial consoles).
:head
s/^[[:space:]]*console=\(serial0\|serial1\|ttyAMA[0-9]*\|ttyS0\)\(,[0-9a-zA-Z]*\)\{0,1\}\([[:space:]]\{1,\}\|$\)//
t head
:middle
s/[[:space:]]\{1,\}console=\(serial0\|serial1\|ttyAMA[0-9]*\|ttyS0\)\(,[0-9a-zA-Z]*\)\{0,1\}\([[:space:]]\|$\)/\3/
t middle
