"""URL table."""

from aiohttp import web

from council.server import handlers, pages
from council.server.openai import chat, completions, embeddings, responses


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat.chat_completions)
    app.router.add_post("/v1/completions", completions.completions)
    app.router.add_post("/v1/embeddings", embeddings.embeddings)
    app.router.add_post("/v1/responses", responses.create_response)
    app.router.add_get("/v1/responses/{response_id}", responses.get_response)
    app.router.add_delete("/v1/responses/{response_id}", responses.delete_response)
    app.router.add_get("/v1/responses/{response_id}/input_items", responses.list_input_items)
    app.router.add_get("/v1/models", handlers.list_models)
    app.router.add_get("/v1/models/{model_id:.+}", handlers.get_model)
    app.router.add_post("/v1/feedback", handlers.feedback)
    app.router.add_get("/v1/records", handlers.list_records)
    app.router.add_get("/v1/records/{record_id}", handlers.get_record)
    app.router.add_delete("/v1/records/{record_id}", handlers.delete_record)
    app.router.add_get("/v1/loop/adapters", pages.loop_adapters)
    app.router.add_get("/v1/loop/adapters/{version}", pages.loop_adapter)
    app.router.add_get("/v1/loop/adapters/{version}/loss.png", pages.loop_loss_png)
    app.router.add_get("/v1/loop/night", pages.loop_night)
    app.router.add_get("/v1/loop/nights", pages.loop_nights)
    app.router.add_get("/health", handlers.health)
    app.router.add_get("/livez", handlers.livez)
    app.router.add_get("/readyz", handlers.readyz)
    app.router.add_get("/metrics", handlers.metrics)
    app.router.add_post("/admin/reload", handlers.admin_reload)
    app.router.add_get("/", pages.chat_page)
    app.router.add_get("/loop", pages.loop_page)
    app.router.add_get("/static/{name:.+}", pages.static_file)
