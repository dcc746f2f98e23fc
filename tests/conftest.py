"""Test-session set-up shared by every module."""

import signal

# Several tests stop a real `mmsr-geo` with SIGINT, as Ctrl-C in a terminal does. A test run
# started in the background by a shell (`pytest &`, nohup) has SIGINT ignored, and children
# inherit an ignored signal: the tool would then never see the Ctrl-C. Give the test process
# the foreground's handler, which its children's Python turns back into KeyboardInterrupt.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
