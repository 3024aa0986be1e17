"""Destinations (SPEC §13): a workspace's events pushed to other systems as signed webhooks."""
