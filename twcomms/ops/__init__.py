"""
Operations: the message hub as a service (C{twistd comms}, through
C{twisted/plugins/twcomms_plugin.py}) and the C{twcomms} command.

Thread: the reactor thread; the command runs the reactor on the main
thread.
"""
