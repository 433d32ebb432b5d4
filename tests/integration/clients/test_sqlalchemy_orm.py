"""SQLAlchemy 2 ORM on mysql+pymysql: models, CRUD, a foreign-key relationship, rollback, get."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import Engine, ForeignKey, Numeric, String, create_engine, func, select
from sqlalchemy.engine import URL
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

if TYPE_CHECKING:
    from tests.support.endpoints import Endpoint


@dataclass(frozen=True)
class Orm:
    engine: Engine
    Author: Any
    Book: Any


def _models(suffix: str) -> tuple[type[DeclarativeBase], Any, Any]:
    """Fresh declarative models whose tables carry this run's suffix."""

    class Base(DeclarativeBase):
        pass

    class Author(Base):
        __tablename__ = f"sa_author_{suffix}"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(String(50), unique=True)
        books: Mapped[list[Book]] = relationship(
            back_populates="author", cascade="all, delete-orphan", order_by="Book.id"
        )

    class Book(Base):
        __tablename__ = f"sa_book_{suffix}"
        id: Mapped[int] = mapped_column(primary_key=True)
        title: Mapped[str] = mapped_column(String(100))
        price: Mapped[Decimal] = mapped_column(Numeric(10, 2))
        author_id: Mapped[int] = mapped_column(ForeignKey(f"{Author.__tablename__}.id"))
        author: Mapped[Author] = relationship(back_populates="books")

    return Base, Author, Book


@pytest.fixture(scope="module")
def orm(proxy_endpoint: Endpoint) -> Iterator[Orm]:
    ep = proxy_endpoint
    url = URL.create(
        "mysql+pymysql",
        username=ep.user,
        password=ep.password,
        host=ep.host,
        port=ep.port,
        database=ep.database,
        query={"charset": "utf8mb4"},
    )
    engine = create_engine(url, pool_pre_ping=True)
    base, author, book = _models(uuid.uuid4().hex[:8])
    base.metadata.create_all(engine)
    try:
        yield Orm(engine, author, book)
    finally:
        base.metadata.drop_all(engine)
        engine.dispose()


def test_add_commit_query_update_delete(orm: Orm) -> None:
    Author = orm.Author
    with Session(orm.engine) as s:
        s.add_all([Author(name="crud-ada"), Author(name="crud-grace"), Author(name="crud-🐬")])
        s.commit()
        names = s.scalars(
            select(Author.name).where(Author.name.like("crud-%")).order_by(Author.name)
        ).all()
        assert names == ["crud-ada", "crud-grace", "crud-🐬"]
        grace = s.scalars(select(Author).where(Author.name == "crud-grace")).one()
        grace.name = "crud-hopper"
        s.commit()
        s.delete(s.scalars(select(Author).where(Author.name == "crud-ada")).one())
        s.commit()
    with Session(orm.engine) as s:  # a fresh session sees what was committed
        names = s.scalars(
            select(Author.name).where(Author.name.like("crud-%")).order_by(Author.name)
        ).all()
        assert names == ["crud-hopper", "crud-🐬"]


def test_relationship_with_foreign_key(orm: Orm) -> None:
    Author, Book = orm.Author, orm.Book
    with Session(orm.engine) as s:
        knuth = Author(name="rel-knuth")
        knuth.books = [
            Book(title="TAOCP 1", price=Decimal("99.90")),
            Book(title="TAOCP 2", price=Decimal("89.50")),
        ]
        s.add(knuth)
        s.commit()
        author_id = knuth.id
    with Session(orm.engine) as s:
        loaded = s.get(Author, author_id)
        assert loaded is not None
        assert [(b.title, b.price) for b in loaded.books] == [
            ("TAOCP 1", Decimal("99.90")),
            ("TAOCP 2", Decimal("89.50")),
        ]
        assert {b.author.name for b in loaded.books} == {"rel-knuth"}
        total = s.scalar(
            select(func.sum(Book.price)).join(Book.author).where(Author.name == "rel-knuth")
        )
        assert total == Decimal("189.40")
        # The foreign key is enforced by the server.
        s.add(Book(title="orphan", price=Decimal(1), author_id=-1))
        with pytest.raises(IntegrityError) as err:
            s.commit()
        assert err.value.orig is not None
        assert err.value.orig.args[0] == 1452
        s.rollback()
        s.delete(s.get(Author, author_id))  # cascades to the books
        s.commit()
        assert s.scalar(select(func.count()).where(Book.author_id == author_id)) == 0


def test_rollback_discards_changes(orm: Orm) -> None:
    Author = orm.Author
    with Session(orm.engine) as s:
        s.add(Author(name="rb-kept"))
        s.commit()
        s.add(Author(name="rb-discarded"))
        kept = s.scalars(select(Author).where(Author.name == "rb-kept")).one()
        kept.name = "rb-renamed"
        s.flush()  # sent to the server inside the transaction
        assert s.scalar(select(func.count()).where(Author.name.like("rb-%"))) == 2
        s.rollback()
        assert kept.name == "rb-kept"  # expired and reloaded after the rollback
    with Session(orm.engine) as s:
        names = s.scalars(select(Author.name).where(Author.name.like("rb-%"))).all()
        assert names == ["rb-kept"]


def test_get_after_commit(orm: Orm) -> None:
    Author = orm.Author
    with Session(orm.engine) as s:
        a = Author(name="get-liskov")
        s.add(a)
        s.commit()  # expires `a`; its id reloads from the server
        author_id = a.id
        assert s.get(Author, author_id) is a
        assert a.name == "get-liskov"
    with Session(orm.engine) as s:
        fresh = s.get(Author, author_id)
        assert fresh is not None
        assert fresh.name == "get-liskov"
        assert s.get(Author, -1) is None
