"""A one-file Django project for test_wsgi.py and test_asgi.py: a view, the ORM on SQLite
(the database file named by DJANGO_TEST_DB), a template, a CSRF-protected
POST, and static files (from DJANGO_TEST_STATIC).

The module is its own settings, URLconf and app: settings.configure()
before django.setup(), and the model defined once the registry is ready,
under this module's app label. Served as `--app apps.django_site:application`
(WSGI) or `--app apps.django_site:asgi_application` (ASGI);
in mode interpreters every worker imports it, so creating the table
tolerates another worker having done it first.
"""

import os

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="pyparallel-tests-only",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.staticfiles", __name__],
    MIDDLEWARE=["django.middleware.common.CommonMiddleware", "django.middleware.csrf.CsrfViewMiddleware"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["DJANGO_TEST_DB"]}},
    DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    TEMPLATES=[
        {
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "OPTIONS": {
                "loaders": [
                    (
                        "django.template.loaders.locmem.Loader",
                        {
                            "notes.html": "<ul>{% for note in notes %}<li>{{ note.text }}</li>{% endfor %}</ul>",
                            "form.html": '<form method="post">{% csrf_token %}</form>',
                        },
                    )
                ],
                "context_processors": ["django.template.context_processors.csrf"],
            },
        }
    ],
    STATIC_URL="/static/",
    USE_TZ=True,
)
django.setup()

from django.core.asgi import get_asgi_application  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.db import OperationalError, connection, models  # noqa: E402
from django.http import HttpResponse, JsonResponse  # noqa: E402
from django.shortcuts import render  # noqa: E402
from django.urls import path  # noqa: E402
from django.views.decorators.csrf import csrf_exempt  # noqa: E402
from django.views.static import serve  # noqa: E402


class Note(models.Model):
    text = models.CharField(max_length=200)

    class Meta:
        app_label = "django_site"


try:
    with connection.schema_editor() as editor:
        editor.create_model(Note)
except OperationalError:  # another worker's interpreter (or an earlier run) made it
    pass


def hello(request):
    return HttpResponse(f"Hello from Django, {request.GET.get('name', 'nobody')}")


@csrf_exempt
def notes(request):
    if request.method == "POST":
        Note.objects.create(text=request.POST["text"])
        return JsonResponse({"count": Note.objects.count()})
    return render(request, "notes.html", {"notes": Note.objects.order_by("id")})


def protected(request):
    if request.method == "POST":
        return HttpResponse(f"accepted {request.POST['value']}")
    return render(request, "form.html")


urlpatterns = [
    path("hello", hello),
    path("notes", notes),
    path("protected", protected),
    path("static/<path:path>", serve, {"document_root": os.environ.get("DJANGO_TEST_STATIC", "")}),
]

application = get_wsgi_application()
# The same project through Django's ASGI handler (test_asgi.py).
asgi_application = get_asgi_application()
