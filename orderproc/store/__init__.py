"""Persistence: processed orders, dead-lettered orders and their audit trail."""
