"""CDS Hooks 2.0 (https://cds-hooks.hl7.org/2.0/): the exchange's duplicate reminder where an EHR asks for it.

- :mod:`exchange.cds.services`: the services the discovery endpoint lists (``patient-view``, ``order-select``,
  ``order-sign``) and their prefetch templates;
- :mod:`exchange.cds.context`: what a hook request says — the patient (pseudonym, or a resident ID in the
  prefetched Patient), the clinician, the draft orders and their unified items;
- :mod:`exchange.cds.cards`: the cards (wording from ``exchange/cds/data/messages.csv``, :mod:`.wording`);
- :mod:`exchange.cds.outcomes`: the feedback endpoint's outcomes as decisions, once per card.

The routes are :mod:`exchange.api.cds_hooks`.
"""
