"""What a run costs: prices (`pricing`), the one path every charge takes (`billing`), the ledger."""
