"""Files metalab renders (starter config, job scripts); shipped in the wheel as ``metalab.templates``."""
