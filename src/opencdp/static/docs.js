// Starts Swagger UI on opencdp's /docs page (a file of its own: the page runs no inline script).
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    validatorUrl: null, // the badge would ask a server on the Internet
    deepLinking: true,
  });
});
