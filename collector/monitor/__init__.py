"""The monitor inside the collector: findings kept up to date as data arrives, stored as
records with stable ids and revisions, and told to subscribers (design.md section 6)."""
