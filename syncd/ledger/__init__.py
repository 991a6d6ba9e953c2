"""The ledger: durable state of syncd (see ``store.Ledger``)."""
