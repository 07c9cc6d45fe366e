"""The exploration notebook of companydata, executed and rendered to a PDF people can read."""
