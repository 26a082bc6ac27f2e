// The API reference at /docs: Swagger UI (shipped in assets/vendor/swagger-ui) reading /openapi.json.
window.addEventListener("DOMContentLoaded", () => {
  window.ui = window.SwaggerUIBundle({
    // validatorUrl: off, else on any host but localhost the page loads a badge from validator.swagger.io, sending
    // it the document's address (and the Content-Security-Policy refuses it).
    url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true, validatorUrl: null,
    presets: [window.SwaggerUIBundle.presets.apis], layout: "BaseLayout",
    onComplete: () => { document.body.dataset.ready = "true"; },
  });
});
