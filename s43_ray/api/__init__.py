"""The library: what ``import s43_ray`` offers (re-exported there, see its ``__all__``)."""
