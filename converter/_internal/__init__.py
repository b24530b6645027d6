"""Private parts of `tether.converter`: IR, passes, frontends and the `.tmodel` codec.

Nothing here is public API; import from `tether.converter` instead.
"""
