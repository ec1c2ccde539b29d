"""HCP Terraform run tasks: the request HCP Terraform sends, the admin bodies, and the answers."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

STAGES = ("pre_plan", "post_plan", "pre_apply", "post_apply")


class Capabilities(BaseModel):
    model_config = ConfigDict(extra="allow")

    outcomes: bool = False


class RunTaskRequest(BaseModel):
    """The run task request (payload_version 1). Open: HCP Terraform adds fields over time."""

    model_config = ConfigDict(extra="allow")

    payload_version: Literal[1]
    stage: Literal["pre_plan", "post_plan", "pre_apply", "post_apply"]
    access_token: str = Field(min_length=1, max_length=4096, repr=False)
    capabilities: Capabilities = Field(default_factory=Capabilities)
    is_speculative: bool = False
    organization_name: str = Field(min_length=1, max_length=256)
    workspace_id: str = Field(min_length=1, max_length=128)
    workspace_name: str = Field(min_length=1, max_length=256)
    run_id: str = Field(min_length=1, max_length=128)
    run_app_url: str | None = Field(default=None, max_length=2048)
    task_result_id: str = Field(min_length=1, max_length=128)
    task_result_enforcement_level: str | None = Field(default=None, max_length=32)
    task_result_callback_url: str = Field(min_length=1, max_length=2048)
    plan_json_api_url: str | None = Field(default=None, max_length=2048)


class RunTaskAck(BaseModel):
    """The immediate answer to HCP Terraform; the result follows on the callback."""

    status: Literal["verified", "queued", "already_queued"]
    job_id: str | None = None


class Mapping(BaseModel):
    """Which project and environment a workspace's runs are decided for; `*` matches any name."""

    model_config = ConfigDict(extra="forbid")

    organization: str = Field(min_length=1, max_length=256)
    workspace: str = Field(default="*", min_length=1, max_length=256)
    project_id: str = Field(min_length=1, max_length=128)
    environment: str = Field(default="nonprod", min_length=1, max_length=32)


class MappingsPut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mappings: list[Mapping] = Field(max_length=1000)


class RunTaskSettingsView(BaseModel):
    run_task_url: str
    hmac_key_configured: bool
    hmac_key_rotated_at: datetime | None
    mappings: list[Mapping]


class HmacKeyIssued(BaseModel):
    """A new HMAC key, shown this once: paste it into the run task's HMAC key field in HCP Terraform."""

    hmac_key: str
    hmac_key_rotated_at: datetime
    run_task_url: str


class RunTaskJobView(BaseModel):
    id: str
    task_result_id: str
    run_id: str
    stage: str
    organization_name: str
    workspace_name: str
    status: str
    attempts: int
    decision_id: str | None
    result: dict[str, Any] | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class RunTaskJobs(BaseModel):
    items: list[RunTaskJobView]


class Problem(BaseModel):
    """An RFC 9457 problem document; `code` is the stable machine-readable reason."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    code: str
    detail: str
