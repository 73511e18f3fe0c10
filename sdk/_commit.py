# `git archive` writes the commit here (.gitattributes: export-subst), so that a copy
# made from the repository without its .git still says which commit it is.
COMMIT = "$Format:%H$"
