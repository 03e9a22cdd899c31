"""Replies arriving by themselves: mailboxes trackrelay reads (``relay.replies.imap``)."""
