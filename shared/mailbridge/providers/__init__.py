"""Mailbox providers: one adapter per provider (gmail.py, later graph.py) behind `base.MailProvider`."""
