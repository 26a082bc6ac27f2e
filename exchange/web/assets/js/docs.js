// The API reference at /docs: Swagger UI (shipped in assets/vendor/swagger-ui) reading /openapi.json.
window.addEventListener("DOMContentLoaded", () => {
  window.ui = window.SwaggerUIBundle({
    url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true,
    presets: [window.SwaggerUIBundle.presets.apis], layout: "BaseLayout",
    onComplete: () => { document.body.dataset.ready = "true"; },
  });
});
