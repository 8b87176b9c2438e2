"""The two services' tables, request/response models and SQL, described once each.

Genie keeps sessions (genie_sessions), Agent keeps deployments (agent_deployments); both
rows carry an optional pgvector `embedding` searched by L2 distance (`<->`).
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, Field, FiniteFloat

from hive_app.vectors import EMBEDDING_DIM

Embedding = Annotated[list[FiniteFloat], Field(min_length=EMBEDDING_DIM, max_length=EMBEDDING_DIM)]


class SessionIn(BaseModel):
    user_id: str = Field(min_length=1, max_length=255)
    session_data: dict[str, Any] = Field(default_factory=dict)
    embedding: Embedding | None = None


class Session(BaseModel):
    id: UUID
    user_id: str | None
    session_data: Any
    embedding: list[float] | None
    created_at: datetime


class SessionMatch(Session):
    distance: float


class DeploymentIn(BaseModel):
    agent_config: dict[str, Any] = Field(default_factory=dict)
    deployment_status: str = Field("pending", min_length=1, max_length=50)
    embedding: Embedding | None = None


class Deployment(BaseModel):
    id: UUID
    agent_config: Any
    deployment_status: str | None
    embedding: list[float] | None
    created_at: datetime


class DeploymentMatch(Deployment):
    distance: float


class SearchIn(BaseModel):
    embedding: Embedding
    limit: int = Field(10, ge=1, le=100)


@dataclass(frozen=True)
class Resource:
    service: str
    table: str
    path: str  # the collection's URL, e.g. /api/v1/sessions
    columns: tuple[tuple[str, str], ...]  # the data columns besides id, embedding and created_at
    create_model: type[BaseModel]
    row_model: type[BaseModel]
    match_model: type[BaseModel]

    @property
    def noun(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[1][:-1]  # sessions → session

    @property
    def create_table_sql(self) -> str:
        data = "".join(f", {name} {sql_type}" for name, sql_type in self.columns)
        return (f"CREATE TABLE IF NOT EXISTS {self.table} (id UUID PRIMARY KEY{data}, "
                f"embedding vector({EMBEDDING_DIM}), created_at TIMESTAMP DEFAULT NOW())")

    @property
    def add_embedding_sql(self) -> str:
        # tables made by the earlier separate-container setup have no embedding column
        return f"ALTER TABLE {self.table} ADD COLUMN IF NOT EXISTS embedding vector({EMBEDDING_DIM})"

    @property
    def _select_list(self) -> str:
        return ", ".join(["id", *(name for name, _ in self.columns), "embedding", "created_at"])

    @property
    def insert_sql(self) -> str:
        names = ["id", *(name for name, _ in self.columns), "embedding"]
        params = ", ".join(f"${i}" for i in range(1, len(names) + 1))
        return f"INSERT INTO {self.table} ({', '.join(names)}) VALUES ({params}) RETURNING {self._select_list}"

    @property
    def get_sql(self) -> str:
        return f"SELECT {self._select_list} FROM {self.table} WHERE id = $1"

    @property
    def list_sql(self) -> str:
        return f"SELECT {self._select_list} FROM {self.table} ORDER BY created_at DESC, id LIMIT $1 OFFSET $2"

    @property
    def search_sql(self) -> str:
        return (f"SELECT {self._select_list}, embedding <-> $1::vector AS distance FROM {self.table} "
                f"WHERE embedding IS NOT NULL ORDER BY embedding <-> $1::vector, id LIMIT $2")

    def insert_args(self, body: BaseModel) -> list[Any]:
        return [getattr(body, name) for name, _ in self.columns] + [body.embedding]  # type: ignore[attr-defined]


GENIE = Resource(
    service="genie",
    table="genie_sessions",
    path="/api/v1/sessions",
    columns=(("user_id", "VARCHAR(255)"), ("session_data", "JSONB")),
    create_model=SessionIn,
    row_model=Session,
    match_model=SessionMatch,
)

AGENT = Resource(
    service="agent",
    table="agent_deployments",
    path="/api/v1/deployments",
    columns=(("agent_config", "JSONB"), ("deployment_status", "VARCHAR(50)")),
    create_model=DeploymentIn,
    row_model=Deployment,
    match_model=DeploymentMatch,
)

RESOURCES = {r.service: r for r in (GENIE, AGENT)}
