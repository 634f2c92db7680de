"""Connection filter stage: IP allow/block lists, DNS block lists, PTR and HELO facts."""
