"""The LLMDeployment API (pydantic models) and the CRD generated from it."""
