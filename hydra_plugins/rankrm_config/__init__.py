"""Hydra imports every module under `hydra_plugins` when it starts; importing rankrm.config here
registers the schema defaults (`<group>/base`) so any compose of rankrm/conf finds them."""

import rankrm.config  # noqa: F401
